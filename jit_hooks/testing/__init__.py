"""Real-process harness shared by the tests, the benchmarks and the demo: the service,
a sandboxed sshd with the hooks, jit-hooksd, a syslog sink, test PKI and seeding.

Not shipped on hosts (debian/rules drops it with the service).
"""
