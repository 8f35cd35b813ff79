"""Fine-tuning the VLM: collator, optimizer/schedule, Ray Train worker loop, stage driver."""
