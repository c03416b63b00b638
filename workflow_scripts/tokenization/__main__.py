from workflow_scripts.tokenization.stage import main

if __name__ == "__main__":
    raise SystemExit(main())
