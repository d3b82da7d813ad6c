"""Command-line entry points (layer 5): thin wrappers that parse arguments and call the library; nothing imports them.

Every tool is `python -m bloodcell.tools.<name>` with a `main()` wrapped by `tools.cli`: a user error prints one
`error: ...` line and exits with status 2. Tools configured by conf/ (train, evaluate, benchmark_sets) are Hydra
apps (`hydra_tool`); the others take argparse options (`argparse_tool`).
"""
