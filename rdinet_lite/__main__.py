"""``python -m rdinet_lite ...``: the latency command line, ``rdinet-bench`` (:mod:`rdinet_lite.bench`)."""

from rdinet_lite.bench import main

raise SystemExit(main())
