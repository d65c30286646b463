"""``llmrelay batch``: OpenAI batch files against any provider — checked first, resumable after a crash, adaptive
to rate limits, on one machine or a Ray cluster (SPEC section 10).

Modules: :mod:`.command` (the subcommand's options), :mod:`.inputs` (checking and streaming the input),
:mod:`.output` (resume and appending), :mod:`.limits` (AIMD, pause, rpm, tpm), :mod:`.operations` (what each url
does, which provider answers), :mod:`.lines` (one line's attempts and record), :mod:`.runner` (the run, local
backend), :mod:`.progress`, :mod:`.ray_backend`. Nothing here is imported by ``llmrelay --help`` except
:mod:`.command`.
"""
