"""One module per `kubefence` subcommand: HELP, add_arguments(parser) and run(args) -> int;
and `workers`, the process supervisor of `serve --workers N`."""
