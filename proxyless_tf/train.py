"""`python -m proxyless_tf.train`: the command line lives in `proxyless_tf.cli.train`."""

if __name__ == "__main__":
    from absl import flags

    from proxyless_tf.cli import train

    __doc__ = train.__doc__  # absl prints the main module's docstring as the usage
    flags.adopt_module_key_flags(train)  # so --help lists the retraining flags, not only absl's
    train.entry()
