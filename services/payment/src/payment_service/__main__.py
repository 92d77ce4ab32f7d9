from payment_service.bootstrap import main

raise SystemExit(main())
