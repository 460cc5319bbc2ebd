"""Replicated sweeps: init seeds x copy seeds x rewinding points x IMP levels x baselines.

Every run lives in a directory named by the hash of what determines it
(lmc_tf.store), under one root:
  train_<hash>/   the unpruned network of one init seed (IMP level 0, the parent
                  of every analysis), checkpointed at every rewinding point
  imp_<hash>/     the IMP levels and baselines of one init seed and rewinding point
  lmc_<hash>/     one instability analysis
  sweep_<hash>.json  the sweep's plan: every job, its settings and directory
A job that is done is skipped; one that was interrupted resumes; a run that
two jobs or two sweeps need is trained once (and locked while it trains).
"""
import dataclasses
import os

from absl import logging
import tensorflow as tf

from lmc_tf import io_utils
from lmc_tf import store
from lmc_tf import summaries
from lmc_tf import workers
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError
from lmc_tf.pruning import lottery
from lmc_tf.training import trainer


@dataclasses.dataclass(frozen=True)
class Job:
  kind: str  # 'lottery' or 'analysis'
  init_seed: int
  rewind_iteration: int  # k
  level: int
  baseline: str  # 'imp' (the IMP subnetwork or, at level 0, the unpruned network) or a baseline
  copy_seeds: tuple
  directory: str
  dense_dir: str
  lottery_dir: str

  def label(self):
    seeds = ','.join(map(str, self.copy_seeds))
    return (f'{self.kind:8s} init={self.init_seed} k={self.rewind_iteration}it '
            f'level={self.level} {self.baseline}' +
            (f' copies={seeds}' if self.kind == 'analysis' else ''))


class Sweep:
  """Plans and runs the jobs of one sweep over one network config."""

  def __init__(self, hparams, options, pruning, interp, sweep, root, data, strategy=None):
    self.hparams, self.options, self.pruning, self.interp = hparams, options, pruning, interp
    self.sweep, self.root, self.data, self.strategy = sweep, root, data, strategy
    # The whole plan is checked before its first job trains.
    clock = trainer.check_config(hparams, options, data)
    lottery.check_pruning(pruning)
    instability.check_interpolation(interp)
    self.rewind_iterations = sorted({clock.rewinding_point(k) for k in sweep.rewind_points})
    if not self.rewind_iterations:
      raise UserError('SweepConfig.rewind_points is empty: give at least one, e.g. ("0it",)')
    for baseline in sweep.baselines:
      if baseline not in lottery.BASELINES:
        raise UserError(f'unknown baseline {baseline!r} in SweepConfig.baselines: choose from '
                        f'{", ".join(lottery.BASELINES)}')
    if any(level < 0 for level in sweep.levels) or not sweep.levels:
      raise UserError('SweepConfig.levels must list levels >= 0, e.g. (0, 5, 10)')
    if not sweep.init_seeds or any(len(pair) != 2 for pair in sweep.copy_seeds):
      raise UserError('SweepConfig needs init_seeds and copy_seeds as pairs, e.g. ((1, 2),)')
    if pruning.style == 'one_shot' and (max(sweep.levels) > 1 or not pruning.target_density):
      raise UserError('one-shot pruning has one level, to PruningConfig.target_density: set it '
                      'and give SweepConfig.levels within (0, 1)')
    lottery.Lottery(hparams, options, self._pruning(self.rewind_iterations[0]), root,
                    data).check_plan(max(sweep.levels), pruning.target_density)
    self.jobs()  # every analysis' Spec is checked too

  def _hparams(self, init_seed):
    return dataclasses.replace(self.hparams, training=dataclasses.replace(
        self.hparams.training, init_seed=init_seed))

  def _pruning(self, rewind_iteration):
    return dataclasses.replace(self.pruning, rewind=f'{rewind_iteration}it')

  def _spec(self, hparams, rewind_iteration, level, baseline, seeds):
    return instability.make_spec(hparams, self.options, self.interp, self.data,
                                 f'{rewind_iteration}it', 2, list(seeds), baseline,
                                 self._pruning(rewind_iteration), level, has_mask=level > 0)

  def jobs(self):
    """Every job, in a fixed order: lotteries first, then analyses."""
    lotteries, analyses = [], []
    pruned_levels = [level for level in self.sweep.levels if level > 0]
    for init_seed in self.sweep.init_seeds:
      hparams = self._hparams(init_seed)
      dense_dir = store.run_dir(self.root, 'train', {'hparams': hparams})
      for rewind_iteration in self.rewind_iterations:
        lottery_dir = store.run_dir(self.root, 'imp', {
            'hparams': hparams, 'pruning': self._pruning(rewind_iteration)})
        if pruned_levels:
          lotteries.append(Job('lottery', init_seed, rewind_iteration, max(pruned_levels), 'imp',
                               (), lottery_dir, dense_dir, lottery_dir))
        if not self.sweep.analyze:
          continue
        for level in self.sweep.levels:
          baselines = ('imp',) + (tuple(self.sweep.baselines) if level > 0 else ())
          for baseline in baselines:
            for seeds in self.sweep.copy_seeds:
              spec = self._spec(hparams, rewind_iteration, level, baseline, seeds)
              analyses.append(Job('analysis', init_seed, rewind_iteration, level, baseline,
                                  tuple(seeds), spec.run_dir(self.root).path, dense_dir,
                                  lottery_dir))
    return lotteries + analyses

  def manifest_path(self):
    return store.sweep_plan(self.root, {
        'hparams': self.hparams, 'pruning': self.pruning, 'interpolation': self.interp,
        'sweep': self.sweep})

  def write_manifest(self, jobs):
    tf.io.gfile.makedirs(self.root)
    io_utils.write_json(self.manifest_path(), {
        'hparams': self.hparams.to_dict(), 'pruning': dataclasses.asdict(self.pruning),
        'sweep': store.describe(self.sweep),
        'jobs': [{**dataclasses.asdict(job), 'copy_seeds': list(job.copy_seeds),
                  'directory': os.path.relpath(job.directory, self.root),
                  'dense_dir': os.path.relpath(job.dense_dir, self.root),
                  'lottery_dir': os.path.relpath(job.lottery_dir, self.root)} for job in jobs]})

  def is_done(self, job):
    if job.kind == 'analysis':
      return store.RunDir(job.directory).finished()
    lottery_dir = store.RunDir(job.lottery_dir)
    directories = [store.RunDir(job.dense_dir)] + [
        lottery_dir.level(level, baseline)
        for level in range(1, job.level + 1)
        for baseline in ('imp',) + (tuple(self.sweep.baselines)
                                    if level in self.sweep.levels else ())]
    return all(d.finished() for d in directories)

  def run_job(self, job):
    hparams = self._hparams(job.init_seed)
    options = dataclasses.replace(self.options, checkpoint_at=tuple(
        self.options.checkpoint_at) + tuple(f'{k}it' for k in self.rewind_iterations))
    masks = None
    if job.kind == 'lottery' or job.level > 0:
      one_shot = self.pruning.style == 'one_shot'
      lottery.run(hparams, options, self._pruning(job.rewind_iteration), job.lottery_dir,
                  self.data, self.strategy, levels=None if one_shot else job.level,
                  target_density=self.pruning.target_density if one_shot else None,
                  baselines=self.sweep.baselines,
                  baseline_levels=set(self.sweep.levels), dense_dir=job.dense_dir)
      if job.kind == 'lottery':
        return
      masks = store.RunDir(job.lottery_dir).level(job.level).read_arrays(store.MASK)
    spec = self._spec(hparams, job.rewind_iteration, job.level, job.baseline, job.copy_seeds)
    instability.Analysis(spec, options, job.directory, self.data, self.strategy, masks,
                         job.dense_dir).run()

  def run(self, worker_index=0, num_workers=1, dry_run=False):
    """Runs this worker's share of the jobs (all of them with one worker)."""
    if not 0 <= worker_index < num_workers:
      raise UserError(f'--worker_index={worker_index} is outside 0..{num_workers - 1}')
    jobs = self.jobs()
    mine = jobs[worker_index::num_workers]
    if dry_run:
      done = 0
      for job in jobs:
        status = 'done' if self.is_done(job) else 'todo'
        done += status == 'done'
        owner = f'worker {jobs.index(job) % num_workers}' if num_workers > 1 else ''
        print(f'{status:4s}  {job.label()}  {os.path.basename(job.directory)}  {owner}')
      print(f'{len(jobs)} jobs, {done} done, {len(jobs) - done} to do')
      return jobs
    self.write_manifest(jobs)
    summaries.write_sweep_layout(self.root)
    for number, job in enumerate(mine):
      self.link(job)
      if workers.chief_decides(self.strategy, self.is_done(job)):
        continue
      logging.info('Job %d/%d: %s', number + 1, len(mine), job.label())
      self.run_job(job)
      self.link(job)  # an analysis of a level whose mask it waited for
    return jobs

  def link(self, job):
    """Readable names for the job's runs in ROOT/tensorboard (summaries.link_runs), e.g.
    train_init0, imp_init0_k500 and analysis_k500_density3.9%_imp_init0_copies1-2; an
    analysis once its density is known (its IMP level's mask is there)."""
    links = {f'train_init{job.init_seed}': job.dense_dir}
    if job.kind == 'lottery' or job.level > 0:
      links[f'imp_init{job.init_seed}_k{job.rewind_iteration}'] = job.lottery_dir
    level = store.RunDir(job.lottery_dir).level(job.level)
    if job.kind == 'analysis' and (job.level == 0 or level.exists(store.MASK)):
      density = summaries.mask_density(level.read_arrays(store.MASK)) if job.level else 1.0
      links[summaries.analysis_name(job.rewind_iteration, density, job.baseline, job.init_seed,
                                    job.copy_seeds)] = job.directory
    summaries.link_runs(self.root, links)
