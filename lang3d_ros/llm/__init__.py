"""3D-LLM core: scene/location tokens, language-model backends, request parsing, spatial reasoning.

ROS-free. ``Reasoner.ground`` / ``Reasoner.ask`` answer relational queries and questions on a
list of ``SceneObject``; the model only structures the text, geometry is computed in code.
"""

from lang3d_ros.llm.answer import Answer, GroundingAnswer, Reasoner, TaskStep
from lang3d_ros.llm.backends import LLMUnavailable, OpenAIBackend, TransformersBackend, make_backend
from lang3d_ros.llm.colors import color_name
from lang3d_ros.llm.config import LLMConfig
from lang3d_ros.llm.frontend import check_query, normalize
from lang3d_ros.llm.location import LocationGrid, add_location_tokens
from lang3d_ros.llm.parser import parse
from lang3d_ros.llm.request import Action, Attribute, Intent, Phrase, Relation, Request, Superlative
from lang3d_ros.llm.understand import AnsweredBy, Route, Understanding

__all__ = [
    "Action",
    "AnsweredBy",
    "Answer",
    "Attribute",
    "GroundingAnswer",
    "Intent",
    "LLMConfig",
    "LLMUnavailable",
    "LocationGrid",
    "OpenAIBackend",
    "Phrase",
    "Reasoner",
    "Relation",
    "Request",
    "Route",
    "Superlative",
    "TaskStep",
    "TransformersBackend",
    "Understanding",
    "add_location_tokens",
    "check_query",
    "color_name",
    "make_backend",
    "normalize",
    "parse",
]
