from pmkeys.cli import main

main()
