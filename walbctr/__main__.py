from walbctr.cli.main import main

main()
