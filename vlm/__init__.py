"""mmalign.vlm: see DESIGN.md."""
