"""One ``run(cfg)`` per subcommand, composed from the modules of the data path."""
