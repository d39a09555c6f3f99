"""mmalign.robotics: see DESIGN.md."""
