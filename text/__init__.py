"""mmalign.text: causal language models as policies (`policy`), the text task (`task`), text rewards (BLEU, chrF,
...: `rewards`, learned reward models: `reward_models`), BLEUBERI data selection (`selection`), and the token-level
searches (`search`: DeAL, Transfer Q*) behind the decoding-time methods of `mmalign eval | sample --decode`
(`decoder`)."""
