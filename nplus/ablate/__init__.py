"""Ablation studies: study files (`study`), the local runner (`runner`), the SLURM executor (`slurm`), and the
`nplus ablate` / `nplus stats` commands (`cli`)."""
