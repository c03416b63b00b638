from workflow_scripts.sft.stage import main

if __name__ == "__main__":
    raise SystemExit(main())
