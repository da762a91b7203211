from core.curate.demogen.build import main

main()
