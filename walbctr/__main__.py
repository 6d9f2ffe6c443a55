from walbctr.cli import main

main()
