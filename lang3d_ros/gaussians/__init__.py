"""Language Gaussians: initialise from the fused map, train (RGB, then language latents), render on gsplat
(CUDA) or a tiled PyTorch rasterizer (any device), store as 3DGS PLY, and query in 3D."""
