from inventory_service.bootstrap import main

raise SystemExit(main())
