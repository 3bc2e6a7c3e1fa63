"""Online 3D instances (segments) fused from keyframe masks: the segment table, association, maintenance."""
