from rfr.cli import main

main()
