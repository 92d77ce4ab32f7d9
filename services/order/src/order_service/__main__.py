from order_service.bootstrap import main

raise SystemExit(main())
