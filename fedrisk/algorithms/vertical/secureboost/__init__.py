"""SecureBoost (Cheng et al. 2019): gradient-boosted trees over vertically split data, per role.

The label holder L holds ``y`` and some features; feature holders H_1..H_k hold other features of
the same (PSI-aligned) rows. Every party bins its own columns locally
(:mod:`fedrisk.algorithms.vertical.binning`). Trees are grown level by level (depth-wise, as
XGBoost's default); the loss is binary log-loss.

Message flow (tags ``sb.*``; ``t`` = tree, ``d`` = depth)
----------------------------------------------------------
==  =========  =====================  ==================  =============================================
#   direction  tag                    kind                payload
==  =========  =====================  ==================  =============================================
1   L -> H     ``sb.setup``           public-parameter    public key (OU or Paillier), slot layout of
                                                          the packed ``(g, h)``, row count
2   H -> L     ``sb.bins``            plaintext-by-design number of bins of each of H's features, the
                                                          index of its most populous bin, which H
                                                          never sums (L fills it in as node total
                                                          minus the other bins), the index of its
                                                          missing-value bin (or -1), and its
                                                          monotone direction (+1, -1 or 0)
3   L -> H     ``sb.t<t>.grad``       plaintext-by-design positions of the rows used for this tree,
                                                          the number of chunks and, when above 1,
                                                          ``rows_per_ciphertext`` ``k`` (or ``stop``)
3'  L -> H     ``sb.t<t>.grad.<k>``   ciphertext          ``Enc(pack(g_i, h_i))`` of ``k`` consecutive
                                                          rows per ciphertext (:mod:`.row_packing`),
                                                          streamed in chunks of ~6,000 rows
4   L -> H     ``sb.t<t>.d<d>.plan``  plaintext-by-design partitions of the previous level (for every
                                                          split node: its children and a left/right
                                                          bit per row of the node) and which nodes H
                                                          must build histograms for (the smaller
                                                          child of each pair); ``done`` ends the tree
5   H -> L     ``sb.t<t>.d<d>.hist``  ciphertext          per built node, per feature and bin, the
                                                          homomorphic sum of the rows' ciphertexts,
                                                          compressed (several bin sums per ciphertext);
                                                          with ``k > 1`` the per-position sums aligned
                                                          and every other group masked by H
6   L -> H     ``sb.t<t>.d<d>.win``   control             for the nodes H won: (node, feature index,
                                                          bin index, missing values left?). Empty
                                                          list if H won none.
7   H -> L     ``sb.t<t>.d<d>.mask``  plaintext-by-design for each won node, one left/right bit per row
                                                          of the node (H keeps the threshold)
8   L -> H     ``sb.importance``      aggregate           number of trees kept, split counts and total
                                                          gain of each of H's features
9   H -> L     ``sb.stats``           metric              H's time per phase (for the benchmark)
==  =========  =====================  ==================  =============================================

Scoring (training's test rows and ``fedrisk predict``; tags ``sbi.*``): L walks all trees level
by level. For each level it sends ``sbi.<tag>.q<r>`` (plaintext-by-design) to every H that owns a
split node reached in that level (``r`` counts that H's own rounds, so an H that owns no split
reached is not asked and never sees more rounds than it has split nodes): H's split nodes of that
level and, for each, the positions of the rows that reached it; H answers
``sbi.<tag>.a<r>`` (plaintext-by-design) with one bit per asked row (``x < threshold``; a missing
value goes left only where training learned so). ``{"done": true}`` ends scoring. L is the only one
to get scores. Leakage of scoring: L learns, for each scored row, the side of each H split node
*on that row's path* — at most ``max_depth`` bits per row and tree, ~14 per row for 6 trees of
depth 4 in ``tests/algorithms/vertical/test_secureboost_attacks.py`` where answering every node
gave 48 — enough to place the row in an interval of H's feature at those nodes. H learns which of
its rows reach each of its own nodes (the same partition it learns in training). H refuses to
answer a node twice or a row twice per tree and level; a deviating L can still spread questions
over more rounds (up to one per H node), so against a malicious L the bound is one bit per row
per H node, as before.

Missing values: parties that load with ``missing = "keep"`` keep NaN; each party's binner gives a
feature's missing values a bin of their own (:mod:`fedrisk.algorithms.vertical.binning`), and
split finding tries them on both sides of every threshold, as XGBoost does
(:func:`fedrisk.algorithms.vertical.tree.best_split`); the owner records the side with the
threshold.

Categorical columns (level codes, ``fit(categorical=...)``): H lists the anonymous indices of its
categorical features in ``sb.bins`` (``"categorical"``, only when it has any). L splits those, and
its own, by partitions with XGBoost's ``enable_categorical`` rule
(:func:`fedrisk.algorithms.vertical.tree.best_categorical_split`) on the per-bin sums it already
decrypts, never by thresholds; a won partition travels in ``sb.t<t>.d<d>.win`` as
``"categories"`` (per won node, the owner's bins that go left) and the owner stores the level
codes as ``"categories_left"`` (:mod:`.categorical`). L learns that H's feature j is categorical,
nothing else new.

What each party learns
----------------------
* **L** learns, per node, the sums of ``g`` and ``h`` of H's rows in each of H's bins (that is
  what it decrypts; with several rows per ciphertext the groups beside each sum are H's fresh
  uniform masks, within statistical distance ``2^-40`` of independent of the rows, see
  :mod:`.row_packing` and ``tests/algorithms/vertical/test_secureboost_row_packing.py``), which H-feature index and bin won, and for every H split the left/right side
  of every row that reached the node (training and scoring). It never sees H's thresholds, cut
  points, feature names or values. It also learns the index (not the values) of each H feature's
  most populous bin, which of H's features have missing values (their missing bin is summed like
  any other), and H's split counts per (anonymous) feature.
* **H** learns the public key, ciphertexts it cannot decrypt, which rows L uses for each tree
  (subsampling/validation), and **which of its rows fall in each tree node** — the known
  SecureBoost leakage: since L must tell H each node's instance space, H sees the partition made
  by every split, including L's and other feature holders'. H also learns the tree shape, its own
  winning (feature, bin) pairs, and at the end the split counts and total gain of its features.
  H never sees a gradient, hessian, label, leaf weight or prediction in plaintext.
* Mitigation (option ``first_tree_label_holder_only``): the first tree, which is the most
  label-revealing (its partitions follow ``y`` most closely), is built on L's features alone and no
  message about it is sent to H.

Monotone constraints (``monotone = {x = 1}`` in a party's table; XGBoost semantics, see
:mod:`fedrisk.algorithms.vertical.tree`): the owner of a feature declares its direction in
``sb.bins`` by anonymous feature index; L, which computes every gain and leaf weight, rejects
splits whose child weights go the wrong way and propagates weight bounds to the children, as
XGBoost does. H's bins are ordered by value (bin ``<= k`` = left = lower values), so L needs no
cut point. What this reveals to L: for each of H's constrained features, *that* it is constrained
and the direction (which L, holding the label, could estimate from the split statistics anyway);
never the feature's name, cut points or values. Nothing else changes in the messages.

Security model: semi-honest parties, no collusion between L and an H beyond what they learn
above. OU/Paillier are not CCA-secure: L decrypts only sums H computed and reveals only derived
decisions (bin indices), never raw decryptions. Bin sums are not re-randomised; L could test row
membership of a sum only for rows it already routes itself, which it knows anyway.

Performance design: one packed plaintext per row (both values in one ciphertext, 16 fractional
bits), streamed in chunks so that H sums the root histogram of chunk k while L encrypts chunk k+1;
H builds only the smaller child of each sibling pair and L derives the other by plaintext
subtraction of decrypted sums (parent minus child); H skips each feature's most populous bin
(about half the rows of a low-cardinality column) and L derives it from the node total; H
compresses every level's bin sums into as few ciphertexts as the plaintext space holds, and L
decrypts each level in one batch on the crypto thread pool.

Encryption (one per ciphertext and tree: 24k per tree here, where one row per ciphertext is the
cheapest) dominates. L owns the key, so it encrypts
through CRT (``mod p^2`` and ``mod q``, see :class:`fedrisk.crypto.okamoto_uchiyama._CrtEncryptor`)
on the compiled Montgomery kernel (:mod:`fedrisk.crypto.montgomery`) in its own threads — the
factors never leave its process — and splits each encryption in two: the obfuscators ``h^r``
(16 of 18 table products, independent of the data) for tree ``t+1`` are queued right behind tree
``t``'s chunks, so the cores make them while the tree's levels are built; each is used for
exactly one ciphertext (:class:`~fedrisk.algorithms.vertical.secureboost.encryption._Obfuscators`). At the critical moment only the plaintext's
part remains: the order-``p`` component of ``g`` raised to ``m``, ``1 + p z`` modulo ``p^2``, a few
limb additions and one product modulo ``p`` (the same decryption and hiding as ``g^m``; the
argument is in ``_CrtEncryptor``). Ciphertexts go from L's threads to the wire and from
the wire to H's kernels as fixed-width bytes (no per-value conversion in the main threads). H's
histograms and compression run on the same compiled kernel in its threads (gmpy2 in the crypto
process pool when the kernel is not built: same results, ~2x slower).

H's histograms are computed in two stages (:mod:`~fedrisk.algorithms.vertical.secureboost.histograms`): features are grouped (greedy,
on H's own bins, once), rows with equal bins in every feature of a group form a cell, each cell is
the product of its rows' ciphertexts, and each bin sum the product of its cells. The results are
the same residues as one multiplication per (row, feature), with 35-60% fewer multiplications
(correlated and low-cardinality columns share cells). Nothing about the grouping leaves H.

Measured (benchmarks/run.py vertical-secureboost, 2 cores, 24k rows, 30 trees, OU 2048): training
~46-48 s, ~97 CPU-s with gmpy2 and the public-key encryption path; 26-38 s after the grouping,
skipping and prefetching above; ~14 s, ~25 CPU-s with the compiled kernel and CRT encryption.

Pipeline as rows grow (``benchmarks/run.py scale``): the obfuscators are made at low priority,
and on a busy host they fall behind; a tree used to queue all its chunks before sending the first,
waiting for every ``h^r`` of the tree, so H sat idle and the stall grew with the rows. Now a chunk
takes only the obfuscators already made and the pool makes the rest on the spot at normal priority
(never waiting on the queue, which holds at most one tree's worth), and a sender thread puts each
chunk on the wire as soon as it is encrypted while L's main thread starts the tree (root sums,
plan, its own root histogram). Only randomness changes, so the model is the same bit for bit.

Cost per row and tree (issue #16; ``benchmarks/run.py scale``, measured on this project's loaded
2-core machine): one OU encryption per ciphertext and tree, i.e. per row with one row per ciphertext
(a third of that with three, see :mod:`.row_packing`: -44 % of L's CPU and +17 % of H's at 285k rows
x 30 trees, -25 % in all, ``--one-row-reference`` in that benchmark). At 2048 bits it is
16 fixed-base table products modulo ``p^2`` (22 limbs) and 16 modulo ``q`` (11 limbs) for ``h^r``,
two per-slot products for ``g^m`` and a CRT recombination, ~60 % of the job's CPU; profiles of
both parties (``perf`` on the benchmark's processes) show ~75 % of L's and most of H's CPU inside
the Montgomery product itself, the rest (table lookups, conversions, Python) small. The product
is therefore what was made faster: distributions' libgmp is a generic x86-64 build without
mulx/adx code, and the compiled kernel now uses its own mulx/adcx/adox CIOS product where the CPU
has BMI2 and ADX (:mod:`fedrisk.crypto.montgomery`), measured in the same run on this loaded
machine: an owner-side obfuscator 16.7 -> 13.2 core-us, ``g^m`` + CRT 2.8 -> 2.2, a product
modulo ``n`` for H's histograms 1.50 -> 1.07 us, a decryption 590 -> 432 us (-21 to -29 %); the
ciphertexts are the same residues, so the model is the same bit for bit. A 22-limb product (2 x 22^2
limb products) now takes ~0.5 us, ~1.3 cycles per limb product at the nominal 2.45 GHz, near the
~1 cycle such code reaches; what is left per encryption is the 16 + 16 table products themselves. H's histograms cost ~4.5 products modulo
``n`` per row and tree; moving 256 bytes per row through mTLS gRPC costs ~1 us (both ends).
Checked and *not* done, and why:

* shorter randomness. SecretFlow's HEU draws 110-bit exponents for 2048-bit OU and chains them
  (``h^r = h^r_old * h^delta``). Whether ``c`` encrypts a guessed ``m`` is whether
  ``c g^-m = h^r`` with ``r < 2^t``, which baby-step giant-step or Pollard's kangaroo answer in
  ``2^(t/2)`` steps (for chained exponents, on the quotient of consecutive ciphertexts), so 110
  bits give ~55-bit security. The usual rule (NIST SP 800-56A: exponents of twice the security
  strength) gives 224 bits for a 2048-bit modulus's 112-bit level, which is what L uses
  (``obfuscation_bits = 2 * security_bits``, see :mod:`fedrisk.crypto.okamoto_uchiyama`);
* obfuscators as products of a few precomputed ones (BPV-style subset products): the randomness
  cancels in products of ciphertexts whose subsets balance and reveals linear relations between
  plaintexts; there is no standard analysis for this use;
* wider fixed-base windows for every job: 16 bits instead of 14 take two products fewer out of 16
  per modulus for 3.5x the table memory (~242 MB per key) and ~1.2 CPU-s more to build, a loss for
  small jobs. Since the sixth pass L announces its rows x trees to the key
  (:meth:`fedrisk.crypto.okamoto_uchiyama.OUPrivateKey.expect_encryptions`) and jobs of at least
  2M encryptions (e.g. 120k rows x 30 trees) get the 16-bit windows: -8 to -13 % per ``h^r`` in a
  same-process comparison, the window digits read straight from the CSPRNG's bytes (no bit
  unpacking). Same 224-bit uniform ``r``, so the same ciphertext distribution and model;
* several rows per ciphertext *as such*: H multiplies each row's ciphertext into that row's bins,
  so rows sharing a ciphertext would be summed into each other's bins. Since the fourteenth pass
  this is done with H's sums kept per position and aligned by shifts, and the cross terms masked
  (:mod:`.row_packing`): ``k`` rows per ciphertext (3 at 2048-bit OU) divide L's encryptions by
  ``k``, for more decryptions and H-side masks per bin sum, a fixed cost per node, so L picks ``k``
  from the job's rows and bins (one row for the 24k-row example, three from ~45k rows up).

Idle-time pools cannot lower CPU-seconds (they move work, they do not remove it); L now cancels
the queued ``h^r`` pieces not started when training ends (up to a tree's worth on a busy host).
Checkpoints (``fedrisk.runtime.checkpoint``) keep the per-row margins in a binary side file per
tree instead of the JSON, which was re-encoded as decimal text with every tree.

Modules: :mod:`.params` (settings and what both roles derive from them), :mod:`.row_packing`
(several rows per ciphertext: layout, H's aligned and masked sums, L's reading), :mod:`.label_holder`,
:mod:`.feature_holder` (each role's flow in one place), :mod:`.histograms` (H's cell planning and
homomorphic-sum kernels), :mod:`.encryption` (L's obfuscator queue and chunk encryption),
:mod:`.scoring` (``sbi.*``), :mod:`.models`, :mod:`.messages` (timed send/recv, row bits),
:mod:`.categorical` (partition-split candidates, bins back to level codes).
"""
from __future__ import annotations

from fedrisk.algorithms.vertical.secureboost.feature_holder import SecureBoostFeatureHolder
from fedrisk.algorithms.vertical.secureboost.label_holder import SecureBoostLabelHolder
from fedrisk.algorithms.vertical.secureboost.models import FeatureHolderModel, LabelHolderModel
from fedrisk.algorithms.vertical.secureboost.params import TAG_PREFIXES, SecureBoostParams
from fedrisk.algorithms.vertical.secureboost.scoring import (
    score_feature_holder,
    score_label_holder,
    walk_label_holder,
)
from fedrisk.algorithms.vertical.tree import sigmoid  # noqa: F401 (re-exported: secureboost_reasons uses it)

__all__ = [
    "SecureBoostParams",
    "SecureBoostLabelHolder",
    "SecureBoostFeatureHolder",
    "LabelHolderModel",
    "FeatureHolderModel",
    "score_label_holder",
    "walk_label_holder",
    "score_feature_holder",
    "TAG_PREFIXES",
]
