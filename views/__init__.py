"""Developer views over the experiments: make exps, the make ui link, make sweep."""
