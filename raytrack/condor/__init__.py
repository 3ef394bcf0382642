"""The parts of a Ray cluster inside an HTCondor allocation, which ``raytrack.condor_bootstrap``
(``condor/ray_bootstrap.sh head|worker``) puts together: ``job`` (what the job was given and
told), ``node`` (one node's Ray processes), ``driver`` (the head's command)."""
