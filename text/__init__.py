"""mmalign.text: causal language models as policies, text rewards (BLEU, chrF, ...) and BLEUBERI data selection."""
