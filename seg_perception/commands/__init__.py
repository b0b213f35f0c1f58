"""Small subcommands that have no module of their own."""
