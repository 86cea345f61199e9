from fedrisk.cli import main

main()
