"""mmalign.diffusion: see DESIGN.md."""
