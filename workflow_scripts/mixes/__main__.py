from workflow_scripts.mixes.stage import main

if __name__ == "__main__":
    raise SystemExit(main())
