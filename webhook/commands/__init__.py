"""One module per `kubefence` subcommand: HELP, add_arguments(parser) and run(args) -> int."""
