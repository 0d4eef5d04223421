"""CLI sub-commands: one module per capability, each with ``register(subparsers)``.

A module sets ``parser.set_defaults(func=run)`` where ``run(args) -> int``; it
calls only public jacspec functions and raises ValueError/TypeError on bad input
(the CLI prints one line and exits with code 2).
"""
