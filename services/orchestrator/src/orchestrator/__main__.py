from orchestrator.bootstrap import main

raise SystemExit(main())
