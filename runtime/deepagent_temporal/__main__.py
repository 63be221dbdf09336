from deepagent_temporal.cli import main

raise SystemExit(main())
