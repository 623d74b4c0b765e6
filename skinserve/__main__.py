from skinserve.cli import main

main()
