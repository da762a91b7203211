from tools.demogen.build import main

main()
