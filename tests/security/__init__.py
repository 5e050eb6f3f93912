"""Security suite: authorization matrix, API fuzzing, hostile input, secrets."""
