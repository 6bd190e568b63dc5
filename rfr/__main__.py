from rfr.tools.cli import main

main()
