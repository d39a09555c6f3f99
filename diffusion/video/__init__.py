"""mmalign.diffusion.video: text-to-video diffusion under RL, rewarded by a world model (docs/video.md)."""
