"""mmalign.vlm: vision-language policies fine-tuned with self-supervised, verifiable rewards (SSL4RL).

The VLM policy over Qwen2-VL, Idefics3 / SmolVLM and LLaVA (`policy`, `inputs`), the SSL tasks that make questions
with known answers from images (`ssl_tasks`, `images`, `charts`, `task`), their rewards (`rewards`) and tiny models
built from config (`tiny`). See docs/vlm.md.
"""
