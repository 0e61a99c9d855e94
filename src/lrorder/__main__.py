from lrorder.cli import main

raise SystemExit(main())
