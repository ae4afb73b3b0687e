//! The batcher: group commit across receivers. A batch closes when it holds
//! `batch_messages`, or `batch_window` after its first message arrived, whichever comes
//! first; it waits on the channel, never on extra SQS calls. Handing a batch on waits for
//! a free writer, which is how a busy database slows the receivers (through the channel
//! and then the in-flight budget).

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Runs until every sender is gone, handing each closed batch to `dispatch` (awaited, so a
/// slow dispatch holds the next batch back). The last, partial batch is handed on too.
pub async fn run<T, F, Fut>(
    mut chunks: mpsc::Receiver<Vec<T>>,
    batch_messages: usize,
    window: Duration,
    mut dispatch: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let batch_messages = batch_messages.max(1);
    let mut pending: Vec<T> = Vec::new();
    let mut closes_at: Option<Instant> = None;
    loop {
        let chunk = match closes_at {
            Some(at) => tokio::select! {
                biased;
                chunk = chunks.recv() => chunk,
                () = tokio::time::sleep_until(at) => {
                    closes_at = None;
                    dispatch(std::mem::take(&mut pending)).await;
                    continue;
                }
            },
            None => chunks.recv().await,
        };
        let Some(chunk) = chunk else {
            if !pending.is_empty() {
                dispatch(pending).await;
            }
            return;
        };
        if pending.is_empty() && !chunk.is_empty() {
            closes_at = Some(Instant::now() + window);
        }
        pending.extend(chunk);
        while pending.len() >= batch_messages {
            let rest = pending.split_off(batch_messages);
            dispatch(std::mem::replace(&mut pending, rest)).await;
            // What is left over opened a new batch just now.
            closes_at = (!pending.is_empty()).then(|| Instant::now() + window);
        }
        if pending.is_empty() {
            closes_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Each dispatched batch, with the time (since start) it was dispatched.
    type Dispatched = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

    /// Starts a batcher; returns the sender and the batches it dispatched.
    fn batcher(
        batch_messages: usize,
        window: Duration,
    ) -> (
        mpsc::Sender<Vec<u32>>,
        Dispatched,
        tokio::task::JoinHandle<()>,
    ) {
        let (sender, receiver) = mpsc::channel(4);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let record = Arc::clone(&seen);
        let task = tokio::spawn(run(receiver, batch_messages, window, move |batch| {
            record.lock().unwrap().push((start.elapsed(), batch));
            async {}
        }));
        (sender, seen, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_full_without_waiting_for_the_window() {
        let (sender, seen, task) = batcher(5, Duration::from_secs(10));
        sender.send(vec![1, 2, 3]).await.unwrap();
        sender.send(vec![4, 5, 6, 7]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].1, [1, 2, 3, 4, 5]);
            assert!(seen[0].0 < Duration::from_millis(1));
        }
        drop(sender);
        task.await.unwrap();
        assert_eq!(
            seen.lock().unwrap()[1].1,
            [6, 7],
            "the rest goes at the end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_at_the_window_after_its_first_message() {
        let (sender, seen, task) = batcher(100, Duration::from_millis(20));
        sender.send(vec![1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        sender.send(vec![2]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0].1, [1, 2]);
            assert_eq!(
                seen[0].0,
                Duration::from_millis(20),
                "from the first message"
            );
        }
        // The next batch's window starts with its own first message.
        tokio::time::sleep(Duration::from_millis(100)).await;
        sender.send(vec![3]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            seen.lock().unwrap()[1],
            (Duration::from_millis(145), vec![3])
        );
        drop(sender);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_batcher_dispatches_nothing() {
        let (sender, seen, task) = batcher(10, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(sender);
        task.await.unwrap();
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_dispatch_holds_the_next_batch_back() {
        let (sender, receiver) = mpsc::channel::<Vec<u32>>(1);
        let dispatched = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&dispatched);
        let task = tokio::spawn(run(receiver, 2, Duration::from_secs(1), move |batch| {
            let record = Arc::clone(&record);
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                record.lock().unwrap().push(batch);
            }
        }));
        for n in 0..4 {
            sender.send(vec![n, n]).await.unwrap();
        }
        // Two batches dispatching in turn and one in the channel: the fourth send waited.
        assert!(dispatched.lock().unwrap().len() >= 2);
        drop(sender);
        task.await.unwrap();
        assert_eq!(dispatched.lock().unwrap().len(), 4);
    }
}
