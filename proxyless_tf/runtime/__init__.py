"""Run machinery shared by search and retraining: resumable checkpoints and tf.distribute."""
