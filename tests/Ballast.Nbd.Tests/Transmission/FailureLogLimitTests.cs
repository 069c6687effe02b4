using Ballast.Nbd.Transmission;

namespace Ballast.Nbd.Tests.Transmission;

public class FailureLogLimitTests
{
    [Test]
    public void Ten_failures_a_second_are_logged_and_the_rest_are_counted_and_reported_once()
    {
        var limit = new FailureLogLimit();
        var logged = 0;
        for (var i = 0; i < 100; i++)
        {
            if (limit.Allow(1000 + i, out var before))
            {
                logged++;
            }
            Assert.That(before, Is.Zero, "nothing to report within the first second");
        }
        Assert.That(logged, Is.EqualTo(FailureLogLimit.PerSecond));
        // A second later: the 90 not logged are reported, and this one is logged.
        Assert.That(limit.Allow(2100, out var suppressed), Is.True);
        Assert.That(suppressed, Is.EqualTo(90));
        Assert.That(limit.TakeSuppressed(), Is.Zero);
    }

    [Test]
    public void What_was_not_logged_when_the_connection_ends_is_taken_once()
    {
        var limit = new FailureLogLimit();
        for (var i = 0; i < 15; i++)
        {
            limit.Allow(5000, out _);
        }
        Assert.That(limit.TakeSuppressed(), Is.EqualTo(5));
        Assert.That(limit.TakeSuppressed(), Is.Zero);
    }
}
