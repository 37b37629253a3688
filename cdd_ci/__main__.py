from cdd_ci.cli import main

main()
