from workflow_scripts.sft.train import main

if __name__ == "__main__":
    raise SystemExit(main())
