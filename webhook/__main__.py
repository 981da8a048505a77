"""`python -m webhook` is `kubefence`."""

from webhook.cli import main

raise SystemExit(main())
