from initfetch.cli import main

raise SystemExit(main())
