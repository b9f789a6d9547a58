from relist.cli import main

raise SystemExit(main())
