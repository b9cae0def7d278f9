from sr_cli.cli import main

main()
