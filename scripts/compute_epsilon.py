"""Prints epsilon for a DP-FedAvg / DP-FedPT configuration, or calibrates the noise.

  python scripts/compute_epsilon.py --noise_multiplier=1.0 --clients_per_round=100 \\
      --population=3400 --rounds=1500
  python scripts/compute_epsilon.py --target_epsilon=5 --clients_per_round=100 \\
      --population=3400 --rounds=1500
"""

from fedpt_cli import entry

from absl import flags

from tff_fedpt import privacy

flags.DEFINE_float("noise_multiplier", None, "Noise multiplier (give this or --target_epsilon).")
flags.DEFINE_float("target_epsilon", None, "Find the noise multiplier reaching this epsilon.")
flags.DEFINE_integer("clients_per_round", None, "Clients per round (expected, for poisson).")
flags.DEFINE_integer("population", None, "Number of clients that can be sampled.")
flags.DEFINE_integer("rounds", None, "Training rounds.")
flags.DEFINE_float("delta", None, "Target delta (default 1/population).")
flags.DEFINE_enum("sampling", "poisson", list(privacy.SAMPLINGS), "Client sampling.")
flags.DEFINE_enum("accountant", "rdp", list(privacy.ACCOUNTANTS), "Privacy accountant.")
FLAGS = flags.FLAGS


def main():
    for name in ("clients_per_round", "population", "rounds"):
        if FLAGS[name].value is None:
            raise entry.ScriptError(f"--{name} is required.")
        if FLAGS[name].value < 1:
            raise entry.ScriptError(f"--{name} must be >= 1; received {FLAGS[name].value}.")
    if FLAGS.clients_per_round > FLAGS.population:
        raise entry.ScriptError(
            f"--clients_per_round={FLAGS.clients_per_round} is larger than "
            f"--population={FLAGS.population}."
        )
    if (FLAGS.noise_multiplier is None) == (FLAGS.target_epsilon is None):
        raise entry.ScriptError("give exactly one of --noise_multiplier and --target_epsilon.")
    delta = FLAGS.delta if FLAGS.delta is not None else 1.0 / FLAGS.population
    try:
        if FLAGS.noise_multiplier is not None:
            setting = privacy.PrivacySetting(
                FLAGS.noise_multiplier, FLAGS.clients_per_round, FLAGS.population, FLAGS.sampling
            )
            epsilon = privacy.compute_epsilon(setting, FLAGS.rounds, delta, FLAGS.accountant)
            print(
                f"epsilon = {epsilon:.4f} at delta = {delta:.3g} after {FLAGS.rounds} rounds "
                f"(noise multiplier {FLAGS.noise_multiplier}, {FLAGS.clients_per_round} of "
                f"{FLAGS.population} clients per round, {FLAGS.sampling} sampling, "
                f"{FLAGS.accountant.upper()} accountant)"
            )
        else:
            z = privacy.calibrate_noise_multiplier(
                target_epsilon=FLAGS.target_epsilon,
                target_delta=delta,
                rounds=FLAGS.rounds,
                clients_per_round=FLAGS.clients_per_round,
                population=FLAGS.population,
                sampling=FLAGS.sampling,
                accountant=FLAGS.accountant,
            )
            print(
                f"noise multiplier = {z:.4f} gives epsilon <= {FLAGS.target_epsilon} at "
                f"delta = {delta:.3g} after {FLAGS.rounds} rounds ({FLAGS.clients_per_round} of "
                f"{FLAGS.population} clients per round, {FLAGS.sampling} sampling, "
                f"{FLAGS.accountant.upper()} accountant)"
            )
    except (ValueError, TypeError) as e:
        raise entry.ScriptError(str(e)) from None


if __name__ == "__main__":
    entry.run(main, local_runtime=False)
