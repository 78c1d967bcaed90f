// Waiting on conditions instead of fixed sleeps, so tests stay deterministic under CPU contention.

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolves once `condition` holds (it may be async), polling every `intervalMS`; throws with
 * `message` when it still does not after `timeoutMS`.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  {
    timeoutMS = 10_000,
    intervalMS = 25,
    message = 'condition not met in time',
  }: { timeoutMS?: number; intervalMS?: number; message?: string } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${message} (waited ${timeoutMS} ms)`);
    await sleep(intervalMS);
  }
}

/** `promise`, or a rejection naming `what` if it has not settled after `ms` (a hang made visible). */
export async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no outcome after ${ms} ms (hung)`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
