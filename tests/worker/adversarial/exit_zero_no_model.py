"""Exiting 0 without training: print a confident summary and a fake metric, save nothing, exit 0. Without a model
there is nothing to evaluate: invalid_metric, never ok."""

print("training done in 0.0 s, 1000000 steps")
print("val_bpb: 0.5")
raise SystemExit(0)
