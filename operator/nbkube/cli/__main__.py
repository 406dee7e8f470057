from nbkube.cli import main

raise SystemExit(main())
